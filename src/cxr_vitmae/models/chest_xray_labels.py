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

# CheXpert competition tasks in the order of the paper's code (util/dataloader_med.py, after LibAUC).
CHEXPERT_COMPETITION_LABELS = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")

# COVIDx V9A (3 classes). The paper's code indexes ['normal', 'positive', 'pneumonia', 'COVID-19'] and may have
# trained 4 outputs with index 1 unused; a 4-output head gets that list.
COVIDX_LABELS = ("normal", "pneumonia", "COVID-19")
COVIDX_PAPER_CODE_LABELS = ("normal", "positive", "pneumonia", "COVID-19")


def nih_id2label() -> dict[int, str]:
    """The default `id2label` of every cxr-vitmae classifier: the 14 NIH findings."""
    return dict(enumerate(NIH_CHESTXRAY14_LABELS))


class ChestXrayLabelsMixin:
    """Label defaults shared by the cxr-vitmae configurations (put it before `PreTrainedConfig` in the bases).

    Without `id2label` or `num_labels` a config gets the 14 NIH findings; `label2id` is always rebuilt from
    `id2label`, because the base class keeps a stale inverse map when only `id2label` is given, also when it is set
    after construction (as `from_pretrained(..., id2label=...)` does).
    """

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "id2label" and value is not None:
            super().__setattr__("label2id", {label: int(index) for index, label in value.items()})

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = nih_id2label()
        super().__post_init__(**kwargs)
        self.label2id = {name: index for index, name in self.id2label.items()}

    def to_diff_dict(self):
        # transformers leaves out a label map equal to its own default (2 labels), which would reload here as the
        # NIH default; the maps are always written so a 2-label model stays a 2-label model.
        serializable = super().to_diff_dict()
        full = self.to_dict()
        serializable["id2label"], serializable["label2id"] = full["id2label"], full["label2id"]
        return serializable
