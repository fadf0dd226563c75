"""STAC API over thisme-stac stores."""
