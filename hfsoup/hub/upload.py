"""Publishing a model folder to the Hub in one commit, through ``huggingface_hub``."""

from __future__ import annotations

from pathlib import Path

from hfsoup.errors import HfSoupError, PushError
from hfsoup.hub.format import CARD_NAME, CONFIG_NAME, HUB_FILES, WEIGHTS_NAME


def push(folder: str | Path, repo_id: str, *, private: bool | None = None, create_pr: bool = False,
         revision: str | None = None, token: str | bool | None = None, commit_message: str | None = None,
         extra_files: tuple[str, ...] = ()) -> dict:
    """Upload ``model.safetensors``, ``config.json``, ``README.md`` and ``soup.json`` of ``folder`` to
    ``repo_id`` as one commit (creating the repo, and the branch ``revision``, if needed).

    The token comes from the usual sources (``token`` argument, ``HF_TOKEN``, ``hf auth login``) and is never
    printed. Returns ``{"repo_id", "commit", "url", "pr_url"}``.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        raise HfSoupError(f"'{folder}' is not a model folder ({WEIGHTS_NAME} and {CONFIG_NAME} needed): write one "
                          f"with hfsoup mix/soup --out first")
    files = [f for f in (*HUB_FILES, *extra_files) if (folder / f).is_file()]
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
            allow_patterns=files, create_pr=create_pr,
            commit_message=commit_message or f"Upload {folder.name} with hfsoup")
    except HFValidationError as e:
        raise PushError(f"invalid repo id '{repo_id}': {str(e).splitlines()[0]}") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise PushError(f"not allowed to write to '{repo_id}' (HTTP {status}): log in with `hf auth login` or "
                            f"set HF_TOKEN to a token with write access") from None
        raise PushError(f"push to '{repo_id}' failed: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise PushError(f"cannot reach the Hub at {constants.ENDPOINT} ({type(e).__name__}): check your network "
                        f"and try again") from None
    return {"repo_id": repo_id, "commit": info.oid, "url": info.commit_url, "pr_url": info.pr_url,
            "files": files}


__all__ = ["push", "CARD_NAME"]
