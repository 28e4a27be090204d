"""Building the context: notebook -> spec -> serving plan -> requirements -> rendered directory."""
