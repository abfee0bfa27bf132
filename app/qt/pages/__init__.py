"""The workbench's pages, one module each; the main window creates a page when it is first shown."""
