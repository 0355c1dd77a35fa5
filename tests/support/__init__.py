"""Test support: code the tests need that must never ship (nothing under core/ imports it).

``fault_points`` is also a worker plugin (``core.hooks``): test servers put this folder on
the workers' ``PYTHONPATH`` and import it there by its plain name.
"""
