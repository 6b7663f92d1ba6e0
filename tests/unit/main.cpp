#define BOOST_TEST_MODULE hydra unit tests
#include <boost/test/unit_test.hpp>
