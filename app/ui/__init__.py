"""The desktop window (PySide6, Qt Widgets). Panels mirror the live loop's stages: avatar, camera,
animation, output."""
