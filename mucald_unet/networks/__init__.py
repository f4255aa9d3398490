"""The three parts of the split U-Net: client front end (FE), server segment (SS), client back end (BE)."""
