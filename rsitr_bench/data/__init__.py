"""The retrieval data model: splits of images and captions, text normalisation, fingerprints, packages.

Nothing is imported here, so that a light module such as ``data.text`` can be used (by the command line's
parser, say) without loading numpy through ``data.model``.
"""
