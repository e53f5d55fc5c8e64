"""The two studies' commands and figures; they sit above training and sweep and import from them, never the other way."""
