"""tiles_server: a TiTiler service for run outputs (RGB, masks, probabilities as map overlays).

Built in its own issue; this package currently only marks its place in the architecture.
"""
