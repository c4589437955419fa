"""Tests of tiles_server."""
