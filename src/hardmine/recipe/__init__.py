"""The recipe: YAML config -> checked data -> datasets -> trainer -> run.

Built on the library (``core``, ``config``, ``data``, ``models``, ``train``);
nothing in the library imports it.

* :mod:`hardmine.recipe.checks`: what is checked before any model loads (the
  config against the run it describes, every record and encoded length);
* :mod:`hardmine.recipe.run`: :func:`run_training`, ``hardmine train``;
* :mod:`hardmine.recipe.demo`: ``hardmine demo``.
"""
