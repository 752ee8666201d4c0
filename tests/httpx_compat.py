"""The HTTP library of the installed ``huggingface_hub``: ``httpx2`` (huggingface_hub >= 2) or ``httpx`` (1.x), so
the tests construct the exceptions the client really raises."""

try:
    import httpx2 as httpx  # noqa: F401
except ImportError:  # huggingface_hub 1.x
    import httpx  # noqa: F401
