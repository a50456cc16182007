"""Bundled TOML profiles (package data)."""
