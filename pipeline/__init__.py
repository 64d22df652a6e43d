"""Pipeline stages: params in, files out (atomically), tracking. One `python -m pipeline.<stage>` per rule."""
