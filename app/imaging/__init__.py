"""Images as plumbing, with no notion of faces or avatars: reading image files, frames between host
and device, and person segmentation."""
