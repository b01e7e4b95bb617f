"""Recording what attention modules compute: the hooks (recorder), how each type's gates read (adapters),
and the adapters for torchvision / timm modules (external)."""
