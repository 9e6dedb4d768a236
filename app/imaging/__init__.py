"""Images as plumbing, with no notion of faces or avatars: reading image files, frames between host
and device, person segmentation, and the easing curve of masks and blends."""
