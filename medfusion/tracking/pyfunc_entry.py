"""MLflow "models from code" entry point of the medfusion pyfunc.

:func:`medfusion.tracking.pyfunc.log_pyfunc` logs this file (plain, readable Python) instead of a
cloudpickled model object, so loading a registered model never unpickles anything: MLflow runs
this file, which builds :class:`~medfusion.tracking.pyfunc.MedFusionPyfunc` from the installed
medfusion package; the weights come from the model folder artifact (safetensors).
"""

import mlflow

from medfusion.tracking.pyfunc import MedFusionPyfunc

mlflow.models.set_model(MedFusionPyfunc())
