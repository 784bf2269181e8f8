"""eaft's objectives inside other training libraries. Each module imports its library; this package imports none.

- `eaft.integrations.trl`: `EaftSFTTrainer`, TRL's `SFTTrainer` trained with any registered objective
  (`pip install 'eaft[trl]'`).
"""
