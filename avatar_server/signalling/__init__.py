"""Signalling between the server and the browser: a pure protocol and a broker."""
