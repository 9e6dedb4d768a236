"""What the output shows: paste-back on the device, the output background, and the host-side
finishing of an animated crop into the output frame."""
