"""Synthetic data, training, evaluation and export of the image-to-geometry networks (command line
only, no ``bpy``; never in the extension zip).

python -m pix2vertex_addon.training.synth make-dataset ...     # synthetic data shards / contact-sheet
python -m pix2vertex_addon.training.train --name NAME ...      # train / --resume
python -m pix2vertex_addon.training.evaluate --run DIR ...     # held-out test report
python -m pix2vertex_addon.training.export_weights --run DIR --out pix2vertex_addon/weights
"""
