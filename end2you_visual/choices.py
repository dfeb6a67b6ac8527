"""Every choice list of the toolkit, defined once and importable without
torch: the library checks its arguments against these and the command line
builds its ``click.Choice`` options from them (so ``e2y-visual ... --help``
answers at once, before torch is imported).

The modules that implement a choice (:mod:`.crops` the crop kinds,
:mod:`.models.resnet` the stems and backbones...) import the names from here;
a table keyed by them is checked against them where it is defined.
"""

__all__ = ["ARCHS", "ARCHS_2D", "CROP_KINDS", "DETECTORS", "EXTRACT_FORMATS", "FACES",
           "FEATURE_DTYPES", "FILLS", "HEADS", "HEAD_LABEL_KIND", "I3D_PREFIX", "MODALITIES",
           "PRECISIONS", "STEMS", "TEMPORALS", "COMPRESSIONS", "SPLITS"]

# ------------------------------------------------------------------ faces
#: How a face is cut from a frame (:mod:`end2you_visual.crops`).
CROP_KINDS = ("box", "aligned")
#: How faces are found: track-guided O-Net refinement, or MTCNN on every frame.
DETECTORS = ("tracked", "full")
#: What a frame without a face holds.
FILLS = ("last", "zeros")
#: Whose faces: the main subject's, or every person's (one sequence each).
FACES = ("main", "all")

# ------------------------------------------------------------------ models
#: 2D backbones (:mod:`end2you_visual.models.resnet`), per frame.
ARCHS_2D = ("resnet18", "resnet34", "resnet50", "resnet18_half", "resnet_tiny")
#: A 2D backbone inflated to 3D (I3D) is named with this prefix.
I3D_PREFIX = "i3d_"
ARCHS = ARCHS_2D + tuple(I3D_PREFIX + a for a in ARCHS_2D)
#: First layers of the ResNets (:data:`end2you_visual.models.resnet.STEMS`).
STEMS = ("imagenet", "nopool", "small", "small1")
#: The temporal layer over the per-frame features.
TEMPORALS = ("lstm", "gru", "none")
#: Model heads, and the label kind each is trained and scored on.
HEAD_LABEL_KIND = {"regression": "continuous", "multilabel": "multilabel",
                   "multiclass": "multiclass"}
HEADS = tuple(HEAD_LABEL_KIND)
#: What a model sees: face crops, audio, or both.
MODALITIES = ("visual", "audio", "audiovisual")

# --------------------------------------------------------------- inference
#: Numeric precision of training and inference ("auto": bf16 on CUDA, fp32 on a CPU).
PRECISIONS = ("auto", "bf16", "fp32")
#: The sequences `test` predicts: all, or one split (:func:`end2you_visual.testrun.run_test`).
SPLITS = ("all", "train", "valid", "test")
#: Output formats of `extract` (:data:`end2you_visual.extract.WRITERS`).
EXTRACT_FORMATS = ("hdf5", "npy", "csv")
#: Precision of the features `extract` stores.
FEATURE_DTYPES = ("float16", "float32")

# ------------------------------------------------------------------ generate
#: HDF5 compression of generated frames (None, the default, is none).
COMPRESSIONS = ("gzip", "lzf")
