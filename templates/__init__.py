"""Jinja2 templates and translation catalogs, shipped inside the wheel as symbackprop.templates."""
