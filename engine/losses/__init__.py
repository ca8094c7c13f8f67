"""The loss algebra: pure functions (``functional``), loss terms built from them (``terms``), and one file per
style loss (``gram``, ``wasserstein``, ``sliced``) named in ``registry``.

A new style loss is one file here and one line in ``registry``: the whole and the tiled objectives both drive it
through the ``StyleLoss`` contract (``terms``), so it is tiled exactly with no second implementation. This package
imports nothing heavy, so that the settings can list the style losses without loading torch.
"""
