"""How the pages name the augmentations (segmentation.settings.AUGMENTATION_NAMES) to people."""

AUGMENTATION_CAPTIONS = {
    "gin": "GIN (recommended)",
    "gin-ipa": "GIN + IPA: two GIN views blended",
    "randconv": "Random convolution",
    "fourier": "Fourier amplitude mixing",
    "dsn": "Domain-specific normalization",
    "none": "None (in-modality only)",
}
