"""The synthetic catalog: a deterministic renderer of a person wearing a top, with ground truth.

A `Scene` holds the garment attributes (the DeepFashion-Synthesis schema: color, sleeve, and the
optional pattern) and every nuisance parameter a model must preserve (body, pose, skin, hair,
trousers, background, framing, fabric shading, noise, JPEG quality). `render(scene, size)` is a
pure function of (scene, size) and also returns the region masks, so any attribute edit has a
pixel-exact target (`scene.with_attributes(...)`) and a true region.

The figure is drawn with signed distance functions in figure units (about the image height at
scale 1) and composited front to back with one-pixel anti-aliased edges, so one code path serves
64x64 and 128x128. Randomness inside `render` (noise, background texture, fabric folds, the
multicolor layout) comes from generators seeded by `scene.seed` alone, never by the attributes:
two renders that differ only in attributes are identical outside garment | arms.

The modules, in the order of the data flow: scene (Scene, sample_scene, the palettes), paint
(render: one painter per layer, drawing with canvas's primitives and fabric's color field),
catalog (write_catalog and the readers of what it writes), sheet (contact_sheet).
"""

from amgan_search.synthetic.catalog import (
                                           CATALOG_CSV,
                                           FORMATS,
                                           SCHEMA_JSON,
                                           SETTINGS_JSON,
                                           NotEmpty,
                                           SceneRow,
                                           catalog_scenes,
                                           load_scene_table,
                                           load_scenes,
                                           value_counts,
                                           write_catalog,
)
from amgan_search.synthetic.paint import arm_axis, render
from amgan_search.synthetic.scene import (
                                           BACKGROUNDS,
                                           GARMENT_RGB,
                                           HAIR_RGB,
                                           MASKS,
                                           MULTICOLOR_ACCENTS,
                                           MULTICOLOR_BASE,
                                           NECKLINES,
                                           SCENE_VERSION,
                                           SKIN_RGB,
                                           TROUSERS_RGB,
                                           Scene,
                                           sample_scene,
)
from amgan_search.synthetic.sheet import contact_sheet

__all__ = [
    "BACKGROUNDS", "CATALOG_CSV", "FORMATS", "GARMENT_RGB", "HAIR_RGB", "MASKS",
    "MULTICOLOR_ACCENTS", "MULTICOLOR_BASE", "NECKLINES", "SCENE_VERSION", "SCHEMA_JSON",
    "SETTINGS_JSON", "SKIN_RGB", "TROUSERS_RGB", "NotEmpty", "Scene", "SceneRow", "arm_axis",
    "catalog_scenes", "contact_sheet", "load_scene_table", "load_scenes", "render",
    "sample_scene", "value_counts", "write_catalog",
]
