//! Windows inside the image: registry hives, the BCD store, drivers and installed software.
