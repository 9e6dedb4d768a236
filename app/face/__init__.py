"""Faces in images: landmark sources and layouts, crop and paste-back geometry, eye/lip ratios,
One Euro smoothing and the per-frame driving crop. numpy, OpenCV and MediaPipe only: no networks,
no animation."""
