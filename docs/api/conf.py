"""Sphinx configuration of the API reference: ``make docs`` (warnings are errors).

It documents the installed (or importable) ``adam_plugin``; it adds nothing to ``sys.path``,
so under ``make`` the reference is built from the package as users get it.
"""
import adam_plugin

project = 'adam_plugin'
author = 'the adam_plugin authors'
copyright = 'the adam_plugin authors, Apache-2.0'  # noqa: A001  (Sphinx's name)
release = version = adam_plugin.__version__

extensions = ['sphinx.ext.autodoc', 'numpydoc']
# Every cross-reference must lead to a page of this reference (warnings are errors), except
# these other packages' names: without intersphinx (no network) they have no page here.
nitpicky = True
nitpick_ignore = [('py:class', 'numpy.ndarray'), ('py:class', 'mxnet.optimizer.Optimizer'),
                  ('py:class', 'matplotlib.figure.Figure')]
# A module's __all__ decides which of its members are documented (autodoc's default).
autodoc_default_options = {'members': True, 'undoc-members': True}
autodoc_member_order = 'bysource'
# adam_plugin.chapter.plots draws with matplotlib (the chapter extra), which the reference
# needs not: the docs extra is Sphinx and numpydoc only.
autodoc_mock_imports = ['matplotlib']
numpydoc_show_class_members = False   # members are documented by autodoc, not as tables
numpydoc_class_members_toctree = False
html_theme = 'alabaster'
