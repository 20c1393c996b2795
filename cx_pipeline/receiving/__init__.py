"""Receiving: reconciling receipts against purchase orders, the confirmation cycle, and delay notices."""
