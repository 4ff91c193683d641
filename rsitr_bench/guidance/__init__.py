"""Keyword and perspective guidance: the guarded item context, the per-split service and ``prepare``.

The guard is why this is core and not plugin code: a val/test gallery item never hands out its captions, and the
audit that says so is stamped into every result.
"""
