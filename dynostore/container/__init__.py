"""The data-container daemon: stores and streams the chunks of one site."""
