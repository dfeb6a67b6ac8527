"""The model zoo that ships with end2you-visual (package data, no code).

``registry.json`` lists the models; the weight files (``*.pt``), their model
cards (``*.md``, with their figures) and the training recipes
(``recipes/``) sit beside it. In the repository this is the top-level
``pretrained/`` folder; installed, it is ``end2you_visual/pretrained``.
``end2you_visual.zoo.pretrained_dir()`` says where it is.
"""
