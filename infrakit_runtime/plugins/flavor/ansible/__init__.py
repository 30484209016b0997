"""The ``ansible`` flavor: instances configured by a playbook before they count as healthy (see ``plugin``)."""
