"""The study viewer's widgets: slice views over app.models.viewer.ViewerModel, legend, metadata."""
