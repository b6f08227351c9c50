"""Quality measurements on labelled data sets (run as ``python -m eval.<name>``)."""
