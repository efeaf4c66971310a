"""What the tests, the benchmarks and the demo-asset builder use, and planning never does:
deterministic synthetic CT phantoms (:mod:`.phantoms`) and a writer of images as DICOM series
(:mod:`.dicom_write`). Nothing in the rest of the package imports from here."""
