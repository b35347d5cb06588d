"""berth's default variables (defaults.yml): in the wheel this folder is the package berth.shipped.config."""
