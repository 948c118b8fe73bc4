//! Partition tables: MBR, GPT (protective MBR), hybrid MBR, Windows dynamic disks (LDM).
