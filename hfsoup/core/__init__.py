"""The soup engine: model references, ingredients (metadata + lazy tensors), the averaging engine, the ``Soup``
type and the CIFAR ResNets registered with timm. Depends on nothing else in hfsoup but :mod:`hfsoup.errors`."""
