"""The recipe: YAML config -> checked data -> datasets -> trainer -> run.

Built on the library (``core``, ``config``, ``data``, ``models``, ``train``);
nothing in the library imports it. :mod:`hardmine.recipe.checks` holds what is
checked before any model loads.
"""
