"""Synthetic chest radiographs ("phantoms") written in the exact on-disk formats of NIH ChestX-ray14, CheXpert,
MIMIC-CXR-JPG and COVIDx. No real radiograph can be shipped with the package, so the demo and the tests read these
corpora through the same builders that read the real files.

Each image is an attenuation model of a frontal chest film, drawn directly at the requested size: neck, sloping
shoulders, chest wall and abdomen; lungs whose apices, lateral walls, costophrenic angles and diaphragm domes come
from a few per-patient parameters; the mediastinal silhouette (superior vena cava, aortic knob, pulmonary trunk) and
the heart; trachea, spine, posterior and anterior ribs, clavicles; hila and the vessels branching from them; breast
and nipple shadows and a gastric bubble. The 14 NIH findings change that model where a radiologist would look for
them. `difficulty` (a name in `DIFFICULTY_LEVELS` or a float in [0, 1]; default "medium") sets how plain the
findings are, the noise, the variation and the confounders (`render` says how).
Measured here: a 4-block CNN trained from scratch on 2,300 phantoms at 64 px for 8 epochs reaches a test mean AUROC
of about 0.87 at "easy", 0.77 at "medium" (large findings such as emphysema and edema near 1.0, nodules and fibrosis
about 0.55) and 0.65 at "hard".

Speed (one core, PNG writing included): about 100 images/s at 256 px and 8 images/s at 1024 px.
Labels, patients and splits depend only on `seed`, `num_images` and `test_fraction`, never on `size` or `difficulty`.

One module a job:
- `plan`: patients, follow-ups, views, findings and splits, from the seed alone;
- `canvas`, `anatomy`, `structures`, `findings`, `render`: drawing one planned image;
- `nih_layout`: `generate_phantoms`, NIH's files; `layouts` and `layout_files`: `write_phantom_layout`, the others';
- `nodules`: `plant_nodule`, a nodule drawn into an existing image (anomaly maps);
- `arguments`, `record`: the generator's arguments, and the record file that marks a corpus as phantoms.
"""

from .arguments import DIFFICULTY, DIFFICULTY_CHOICES, DIFFICULTY_LEVELS, resolve_difficulty
from .findings import NODULE_RADII
from .layout_files import CHEXPERT_OBSERVATIONS, LayoutImage
from .layouts import LAYOUT_CORPORA, LAYOUTS, SPLIT_FILES, LayoutSplit, PhantomLayout, write_phantom_layout
from .nih_layout import BBOX_HEADER, BOX_LABELS, DATA_ENTRY_HEADER, PhantomCorpus, PhantomImage, generate_phantoms
from .nodules import plant_nodule
from .plan import TEST_FRACTION
from .record import PHANTOM_RECORD, phantom_record

__all__ = [
    "BBOX_HEADER",
    "BOX_LABELS",
    "CHEXPERT_OBSERVATIONS",
    "DATA_ENTRY_HEADER",
    "DIFFICULTY",
    "DIFFICULTY_CHOICES",
    "DIFFICULTY_LEVELS",
    "LAYOUTS",
    "LAYOUT_CORPORA",
    "NODULE_RADII",
    "PHANTOM_RECORD",
    "SPLIT_FILES",
    "TEST_FRACTION",
    "LayoutImage",
    "LayoutSplit",
    "PhantomCorpus",
    "PhantomImage",
    "PhantomLayout",
    "generate_phantoms",
    "phantom_record",
    "plant_nodule",
    "resolve_difficulty",
    "write_phantom_layout",
]
