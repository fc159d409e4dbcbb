"""Building: a layer's environment in the build folder, installed from its lock and checked."""
