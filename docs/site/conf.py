"""Sphinx configuration of the course site (``python docs/site/build.py``; why Sphinx + myst-nb and
not Jupyter Book: that file's docstring). The chapters are shown as committed: never executed."""

project = "Stroke lesion segmentation from CT perfusion"
author = "the course authors"
copyright = "the course authors; chapters and docs CC BY 4.0, code MIT"

extensions = ["myst_nb"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["**/.ipynb_checkpoints"]

# the committed outputs are the content: never run a chapter
nb_execution_mode = "off"
# the widgets' PNG fallback, not a widget view that needs a kernel and JavaScript from a CDN
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js = {}
nb_merge_streams = True

myst_enable_extensions = ["dollarmath"]  # chapter 02's attention equation
myst_heading_anchors = 3  # the glossary's [HU](#hu) links

html_theme = "furo"
html_title = "Stroke lesion segmentation from CT perfusion"
html_favicon = "favicon.svg"  # else the browser asks for /favicon.ico, a 404
html_copy_source = False  # the chapters are in the repository; the site holds their HTML
html_show_sourcelink = False
html_last_updated_fmt = None
