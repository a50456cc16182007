"""Q16.16 fixed-point arithmetic: the compiled core and its thin Python face."""
