"""What `finetune prepare` leaves out of training, and why: duplicates, boilerplate and text that is not prose."""
