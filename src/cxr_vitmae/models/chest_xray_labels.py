"""Label names shared by the model configurations (the data builders use the same lists)."""

# NIH ChestX-ray14 in the order of the official CSV and of the paper's code (util/dataloader_med.py).
NIH_CHESTXRAY14_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)


def nih_id2label() -> dict[int, str]:
    """The default `id2label` of every cxr-vitmae classifier: the 14 NIH findings."""
    return dict(enumerate(NIH_CHESTXRAY14_LABELS))
