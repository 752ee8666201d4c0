"""The zoo: config (``config``), folder layout (``layout``), augmentation (``augment``), the Accelerate trainer
(``trainer``), the trunk/branch loops (``loops``) and the SWA baseline (``swa``), building every missing step
(``build``), and publishing (``publish``), manifests (``manifest``) and pulling (``pull``)."""
