#define BOOST_TEST_MODULE hydra integration tests
#include <boost/test/unit_test.hpp>
