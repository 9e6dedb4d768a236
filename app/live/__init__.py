"""The live loop: frame sources (camera, video file), the threaded pipeline with its bounded
queues and stats, the sinks (virtual camera, recorder, preview), landmark replay, and
``wiring.build_pipeline``, the one place that puts them together."""
