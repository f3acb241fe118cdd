"""TFDS dataset builders (array_record, no TensorFlow needed), one module per dataset:

- `synthetic_multicam.SyntheticMulticam`: procedural multi-camera scenes (`mv2v_jax.data.synthetic`);
- `multicam_video.MulticamVideo`: ReCamMaster's MultiCamVideo from its published folder layout;
- `long_edit_pairs.LongEditPairs`: long source/edited video pairs with prompts, in fixed-length segments;
- `synthetic_long_edit.SyntheticLongEdit`: long synthetic videos and their object-recolouring edit
  (`mv2v_jax.data.synthetic.long_video`), as records of `long_edit_pairs`' fields.

`common.prepare(builder_class, config, data_dir, manual_dir)` builds one and returns the builder;
`builder.as_data_source()["train"]` reads it back with random access. Record formats are in each
module's docstring.
"""
