"""Test helpers: fakes and factories."""
