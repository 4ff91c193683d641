"""MPS-CLIP building blocks: the G²A adapter, the MPR heads, the hybrid loss and packed perspectives."""
