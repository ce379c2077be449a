"""TUNEFORGE_EXECUTOR=ray with an address that is no URL: a start-up error naming the variable."""

from __future__ import annotations

import pytest

from tuneforge.errors import ConfigError
from tuneforge.settings import Settings


@pytest.mark.parametrize("address", ["http://[::1", "http://127.0.0.1:99999", "http://a b:8265"])
def test_a_ray_address_that_is_no_url_is_a_config_error_naming_the_variable(address):
    from tuneforge.platform.app import make_executor

    settings = Settings(executor="ray", ray_address=address)
    with pytest.raises(ConfigError, match="TUNEFORGE_RAY_ADDRESS=.*cannot reach the Ray cluster's job API"):
        make_executor(settings)
