"""Captioned shape scenes for the embedded model: `dataset` draws them (and their training batches),
`analyzer` reads them back from pixels, so generated images and edits can be scored with numbers."""
